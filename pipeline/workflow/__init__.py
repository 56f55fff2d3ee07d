"""Running the step graph on the worker farm: the canvas, the thin step tasks, launching and waiting for a
batch's canvas, repair of objects left behind, and step timing."""
