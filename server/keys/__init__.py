"""Key rotation: the vault master keys and the card token keys (docs/KEYS.md)."""
