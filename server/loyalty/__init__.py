"""Loyalty programme: the pure rules engine (earning, tiers, rewards) and its document."""
