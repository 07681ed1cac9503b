"""The policy network and its weights.

  ModelConfig                  hyper-parameters (from/to HF config.json)
  Decoder                      Llama / Qwen2 decoder in Flax NNX, with KV cache
  KVCache, init_cache          the cache the sampler threads through decoding
  positions_from_mask          positions (-1 on padding) of a padded batch
  resize_vocab                 grow the embedding for added tag tokens
  smear_keys                   the smeared-keys mixing (ModelConfig.smear_keys)
  load_hf, save_hf, load_gguf, load_pretrained    real weights from local files
"""

from rsearch_jax.models._config import ModelConfig
from rsearch_jax.models._decoder import (
    Decoder,
    KVCache,
    init_cache,
    positions_from_mask,
    resize_vocab,
    smear_keys,
)
from rsearch_jax.models._hf import (
    load_gguf,
    load_hf,
    load_pretrained,
    save_hf,
    to_hf_tensors,
)

__all__ = [
    "ModelConfig", "Decoder", "KVCache", "init_cache", "positions_from_mask",
    "resize_vocab", "smear_keys", "load_hf", "save_hf", "load_gguf", "load_pretrained",
    "to_hf_tensors",
]
