"""Evaluation: seeded rollouts of a policy (success, returns, videos), re-evaluation of a finished run, learning
curves."""
