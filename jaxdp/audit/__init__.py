"""Privacy audits: canaries, attacks, and empirical lower bounds on ε."""
