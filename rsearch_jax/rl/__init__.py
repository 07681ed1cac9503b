"""The RL update: advantages, losses, the train step, rollouts to batches.

  compute_advantages, group_baseline, group_normalize,
  token_rewards_with_kl, discounted_returns, masked_whiten
                                  outcome rewards -> advantages (pure jnp)
  policy_loss, kl_penalty, entropy_from_logits, masked_nll, masked_mean,
  token_logprobs_from_logits      token-level losses under the loss mask
  Learner, LossConfig, OptimConfig, RLBatch, NLLBatch, rows_with_gradient
                                  the jitted, sharded RL / SFT update
  token_advantages, rl_batch, nll_batch, pack_texts, text_examples,
  training_mask, fitted_width, fit_to_rollouts
                                  sampler output -> update batches
  rewrite_rule_based, PolicyRewriter, memorization_examples
                                  R1-Searcher++ memorization
  Stage, RLSettings, Trainer      the curriculum (pretrain / SFT / RL stages)
"""

from rsearch_jax.rl._advantages import (ADVANTAGE_METHODS, compute_advantages,
                                        discounted_returns, group_baseline,
                                        group_normalize, masked_whiten,
                                        token_rewards_with_kl)
from rsearch_jax.rl._losses import (AGGREGATIONS, KL_KINDS,
                                    entropy_from_logits, kl_penalty,
                                    masked_mean, masked_nll, policy_loss,
                                    token_logprobs_from_logits)
from rsearch_jax.rl._curriculum import (MEMORIZATIONS, STAGE_KINDS,
                                        RLSettings, Stage, Trainer)
from rsearch_jax.rl._memorization import (PolicyRewriter,
                                          memorization_examples,
                                          rewrite_rule_based)
from rsearch_jax.rl._rollouts import (fit_to_rollouts, fitted_width,
                                      nll_batch, pack_texts,
                                      rl_batch, text_examples, token_advantages,
                                      training_mask)
from rsearch_jax.rl._train_step import (LOSS_KL_KINDS, SCHEDULES, Learner,
                                        LossConfig, NLLBatch, OptimConfig,
                                        RLBatch, make_optimizer, make_schedule,
                                        nll_loss, rl_loss, rows_with_gradient)

__all__ = [
    "ADVANTAGE_METHODS", "compute_advantages", "discounted_returns",
    "group_baseline", "group_normalize", "masked_whiten",
    "token_rewards_with_kl",
    "AGGREGATIONS", "KL_KINDS", "entropy_from_logits", "kl_penalty",
    "masked_mean", "masked_nll", "policy_loss", "token_logprobs_from_logits",
    "PolicyRewriter", "memorization_examples", "rewrite_rule_based",
    "fit_to_rollouts", "fitted_width", "nll_batch", "pack_texts", "rl_batch",
    "text_examples", "token_advantages", "training_mask",
    "LOSS_KL_KINDS", "SCHEDULES", "Learner", "LossConfig", "NLLBatch",
    "OptimConfig", "RLBatch", "make_optimizer", "make_schedule", "nll_loss",
    "rl_loss", "rows_with_gradient", "MEMORIZATIONS", "STAGE_KINDS",
    "RLSettings", "Stage", "Trainer",
]
