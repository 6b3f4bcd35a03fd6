"""Best-of-N generation: backends produce candidates, constraints and dedupe decide their fate, a
reward model scores the survivors, selection keeps the best, metrics and a report judge the result."""
