"""The llama.cpp engine: GGUF models on node-llama-cpp's prebuilt libllama (ctypes).

lib.py binds the C API, engine.py owns the model and context, prompt_cache.py keeps
conversations as KV sequences, solo.py runs one generation, loader.py builds the
LoadedModel the worker uses for either engine."""
