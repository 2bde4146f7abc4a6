"""FREE training: the state pytree, the jitted iteration, and the outer loop with evaluation."""
