"""Account customers: trade customers who buy on account, pay later and get a monthly
statement (``service`` for the account and its balance, ``statements`` for the job)."""
