"""Business rules per area. Services own the transaction; they never see HTTP."""
