import { afterEach, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  cgroupAncestors,
  cgroupAvailable,
  createLinuxSource,
  meminfoAvailable,
  parseCgroupV2Path,
  parseMeminfo,
} from "../../../src/memory/linux-source";
import { createDarwinSource, parseVmStat } from "../../../src/memory/darwin-source";
import { createMemorySource } from "../../../src/memory/select-source";

const MEMINFO = `MemTotal:       24684084 kB
MemFree:        22026828 kB
MemAvailable:   23969464 kB
Buffers:          123456 kB
Cached:          1500000 kB
Active(anon):      10000 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
`;

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A fake /proc + /sys/fs/cgroup tree: files given relative to the root. */
function fakeRoot(files: Record<string, string>) {
  const root = mkdtempSync(join(tmpdir(), "pensieve-cg-"));
  dirs.push(root);
  for (const [rel, text] of Object.entries(files)) {
    const path = join(root, rel);
    mkdirSync(join(path, ".."), { recursive: true });
    writeFileSync(path, text);
  }
  return { procRoot: join(root, "proc"), cgroupRoot: join(root, "cgroup") };
}

const GiB = 1024 ** 3;
const KIB = 1024;

describe("/proc/meminfo", () => {
  test("parses kB fields into bytes and plain counts as-is", () => {
    const info = parseMeminfo(MEMINFO);
    expect(info.MemAvailable).toBe(23969464 * KIB);
    expect(info.MemTotal).toBe(24684084 * KIB);
    expect(info["Active(anon)"]).toBe(10000 * KIB);
    expect(info.HugePages_Total).toBe(0);
  });

  test("MemAvailable is the figure; old kernels fall back to free + buffers + cached", () => {
    expect(meminfoAvailable(parseMeminfo(MEMINFO))).toBe(23969464 * KIB);
    const old = MEMINFO.replace(/^MemAvailable.*\n/m, "");
    expect(meminfoAvailable(parseMeminfo(old))).toBe((22026828 + 123456 + 1500000) * KIB);
    expect(() => meminfoAvailable({})).toThrow(/MemAvailable/);
  });
});

describe("cgroup v2 path and ancestors", () => {
  test("reads the 0:: line, also on hybrid hosts with v1 lines", () => {
    expect(parseCgroupV2Path("0::/user.slice/app.scope\n")).toBe("/user.slice/app.scope");
    expect(parseCgroupV2Path("4:memory:/x\n1:cpu:/\n0::/\n")).toBe("/");
    expect(parseCgroupV2Path("4:memory:/x\n")).toBeNull();
  });

  test("lists the cgroup and its ancestors up to the mount root, leaf first", () => {
    expect(cgroupAncestors("/sys/fs/cgroup", "/a/b")).toEqual(["/sys/fs/cgroup/a/b", "/sys/fs/cgroup/a", "/sys/fs/cgroup"]);
    expect(cgroupAncestors("/sys/fs/cgroup", "/")).toEqual(["/sys/fs/cgroup"]);
  });
});

describe("cgroup math (fake fs root)", () => {
  test("memory.max - memory.current lowers MemAvailable", async () => {
    const r = fakeRoot({
      "proc/meminfo": MEMINFO,
      "proc/self/cgroup": "0::/app\n",
      "cgroup/app/memory.max": String(4 * GiB),
      "cgroup/app/memory.current": String(3 * GiB),
    });
    const reading = await createLinuxSource(r).read();
    expect(reading.availableBytes).toBe(1 * GiB);
    expect(reading.detail).toEqual({ meminfoAvailable: 23969464 * KIB, cgroupAvailable: 1 * GiB });
  });

  test('"max" means no limit: MemAvailable stands', async () => {
    const r = fakeRoot({
      "proc/meminfo": MEMINFO,
      "proc/self/cgroup": "0::/app\n",
      "cgroup/app/memory.max": "max\n",
      "cgroup/app/memory.current": String(3 * GiB),
    });
    expect((await createLinuxSource(r).read()).availableBytes).toBe(23969464 * KIB);
  });

  test("a tighter ancestor limit wins", async () => {
    const r = fakeRoot({
      "proc/meminfo": MEMINFO,
      "proc/self/cgroup": "0::/outer/inner\n",
      "cgroup/outer/memory.max": String(6 * GiB),
      "cgroup/outer/memory.current": String(5.5 * GiB),
      "cgroup/outer/inner/memory.max": String(4 * GiB),
      "cgroup/outer/inner/memory.current": String(1 * GiB),
    });
    expect((await createLinuxSource(r).read()).availableBytes).toBe(0.5 * GiB);
  });

  test("a limit above MemAvailable does not raise the figure", async () => {
    const r = fakeRoot({
      "proc/meminfo": MEMINFO,
      "proc/self/cgroup": "0::/app\n",
      "cgroup/app/memory.max": String(100 * GiB),
      "cgroup/app/memory.current": String(1 * GiB),
    });
    expect((await createLinuxSource(r).read()).availableBytes).toBe(23969464 * KIB);
  });

  test("usage over the limit clamps to 0", async () => {
    const r = fakeRoot({
      "proc/meminfo": MEMINFO,
      "proc/self/cgroup": "0::/app\n",
      "cgroup/app/memory.max": String(1 * GiB),
      "cgroup/app/memory.current": String(2 * GiB),
    });
    expect((await createLinuxSource(r).read()).availableBytes).toBe(0);
  });

  test("no cgroup v2 entry, or no memory.max files: MemAvailable only", async () => {
    const none = fakeRoot({ "proc/meminfo": MEMINFO, "proc/self/cgroup": "4:memory:/x\n" });
    expect((await createLinuxSource(none).read()).availableBytes).toBe(23969464 * KIB);
    const bare = fakeRoot({ "proc/meminfo": MEMINFO, "proc/self/cgroup": "0::/app\n", "cgroup/app/cgroup.procs": "" });
    expect((await createLinuxSource(bare).read()).detail).toEqual({ meminfoAvailable: 23969464 * KIB });
  });

  test("the limit is re-read on every sample", async () => {
    const r = fakeRoot({
      "proc/meminfo": MEMINFO,
      "proc/self/cgroup": "0::/app\n",
      "cgroup/app/memory.max": String(4 * GiB),
      "cgroup/app/memory.current": String(1 * GiB),
    });
    const src = createLinuxSource(r);
    expect((await src.read()).availableBytes).toBe(3 * GiB);
    writeFileSync(join(r.cgroupRoot, "app/memory.current"), String(3.5 * GiB));
    expect((await src.read()).availableBytes).toBe(0.5 * GiB);
  });

  test("cgroupAvailable rejects garbage limits (the monitor logs and keeps the last sample)", async () => {
    const r = fakeRoot({ "cgroup/app/memory.max": "lots\n" });
    await expect(cgroupAvailable([join(r.cgroupRoot, "app")])).rejects.toThrow(/byte count/);
  });

  test("a missing /proc/meminfo rejects rather than inventing a figure", async () => {
    const r = fakeRoot({ "proc/self/cgroup": "0::/\n" });
    await expect(createLinuxSource(r).read()).rejects.toThrow();
  });
});

describe("accuracy against the OS's own figure", () => {
  // Each platform's source is compared with what the OS itself reports, read independently.
  test("the platform source is within 100 MB of the OS figure", async () => {
    const source = createMemorySource("auto");
    let expected: number;
    let got: number;
    if (process.platform === "linux") {
      const direct = () => Number(/^MemAvailable:\s+(\d+) kB$/m.exec(readFileSync("/proc/meminfo", "utf8"))![1]) * 1024;
      const before = direct();
      got = (await source.read()).availableBytes;
      expected = (before + direct()) / 2;
      // Under a cgroup v2 limit the source reports the lower figure; compare with that instead.
      const cgroup = (await createLinuxSource().read()).detail?.cgroupAvailable;
      if (cgroup !== undefined && cgroup < expected) expected = cgroup;
    } else {
      const vm = await new Response(Bun.spawn(["vm_stat"], { stdout: "pipe" }).stdout).text();
      expected = parseVmStat(vm);
      got = (await createDarwinSource().read()).availableBytes;
    }
    expect(Math.abs(got - expected)).toBeLessThan(100 * 1024 * 1024);
  });
});

describe("createMemorySource specs", () => {
  test("auto picks the platform; linux and darwin are explicit; file:PATH is injected", () => {
    expect(createMemorySource(undefined, { platform: "linux" }).name).toContain("linux");
    expect(createMemorySource("auto", { platform: "darwin" }).name).toContain("darwin");
    expect(createMemorySource("linux").injected).toBe(false);
    const f = createMemorySource("file:/tmp/x");
    expect(f.name).toBe("file:/tmp/x");
    expect(f.injected).toBe(true);
  });

  test("rejects unknown specs and an empty file path", () => {
    expect(() => createMemorySource("psutil")).toThrow(/unsupported memory source/);
    expect(() => createMemorySource("file:")).toThrow(/needs a path/);
    expect(() => createMemorySource("auto", { platform: "win32" })).toThrow(/unsupported/);
  });
});
