"""Background work: the procrastinate job engine, its tasks, the event relay, the worker."""
