"""The warm-up generation at load: on by default, leaves no trace, can be turned off."""

HI = [{"role": "user", "content": "hello there, tell me about the server"}]


def warmup_lines(w):
    return [line for line in w.stderr_lines if "warm-up generation" in line]


def test_load_warms_up_without_touching_the_prompt_cache(spawn, tiny_model):
    w = spawn()
    loaded = w.load(str(tiny_model))
    assert loaded["type"] == "loaded", loaded
    assert len(warmup_lines(w)) == 1
    pc = w.request("stats")["prompt_cache"]
    assert (pc["entries"], pc["hits"], pc["misses"], pc["tokens_reused"]) == (0, 0, 0, 0)
    assert loaded["memory"]["cache_gb"] == 0  # cleared after the warm-up
    done = w.generate(messages=HI, max_tokens=8, temperature=0)[-1]
    assert done["type"] == "done" and done["cached_tokens"] == 0


def test_warmup_false_skips_it_and_output_is_the_same(spawn, tiny_model):
    warm, cold = spawn(), spawn()
    assert warm.load(str(tiny_model))["type"] == "loaded"
    assert cold.load(str(tiny_model), warmup=False)["type"] == "loaded"
    assert not warmup_lines(cold)

    def text(w):
        return "".join(m["text"] for m in w.generate(messages=HI, max_tokens=24, temperature=0)
                       if m["type"] == "delta")

    assert text(warm) == text(cold)


def test_warmup_on_the_single_path_too(spawn, tiny_model):
    w = spawn()
    assert w.load(str(tiny_model), max_batch=1)["type"] == "loaded"
    assert len(warmup_lines(w)) == 1
    assert w.generate(messages=HI, max_tokens=4, temperature=0)[-1]["type"] == "done"


def test_bad_warmup_is_refused(spawn, tiny_model):
    w = spawn()
    err = w.load(str(tiny_model), warmup="yes")
    assert err["type"] == "error" and err["code"] == "bad_request"


def test_injected_faults_do_not_fire_in_the_warm_up(spawn, tiny_model):
    # The warm-up is not a request under test: a crash fault waits for a real generation.
    w = spawn(env={"PENSIEVE_WORKER_FAULT": "crash"})
    assert w.load(str(tiny_model))["type"] == "loaded"
    assert len(warmup_lines(w)) == 1
    w.send("generate", messages=HI, max_tokens=4, temperature=0)
    assert w.wait_exit() == 70
