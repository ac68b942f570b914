"""Campaigns: email and SMS to a set of customers who consented to that channel."""
