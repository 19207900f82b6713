"""distribution-worker: assigns approved leads to matching providers and charges their balances."""
