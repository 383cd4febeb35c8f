"""Lead domain: attribution, scoring, assignment and handoff."""
