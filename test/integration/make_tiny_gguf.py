"""Write the tiny random llama-arch GGUF of python_bridge/tests (byte-level BPE vocab, chat template).

Usage: python make_tiny_gguf.py OUT.gguf
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python_bridge" / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python_bridge"))

from test_gguf_import import HP, tiny_llama_hf, to_gguf_layout, write_tiny_gguf  # noqa: E402

write_tiny_gguf(Path(sys.argv[1]), "llama", to_gguf_layout(tiny_llama_hf()), HP)
print(sys.argv[1])
