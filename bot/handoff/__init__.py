"""Handing qualified leads to account managers: assignment, the brief card, answers, SLA and channel moves."""
