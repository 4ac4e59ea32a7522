"""GPT4Video network: video reading, CLIP frames, abstractor, LoRA-LLaMA, engines.

Imports torch and friends; never FastAPI, Redis or RQ.
"""
