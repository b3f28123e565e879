"""The memory's arms, named in this one place: what a memory=on strategy can be shown."""

# in the gate's order, which picks an arm to explore by a hash index into it: a new order would
# explore other arms on the same inputs, and a stored study's replay would draw anew
SHOWN = ("examples", "rules", "lessons")  # the arms that show something
ARMS = ("none", *SHOWN)  # the gate's arms: none is always one, and served until another is admitted
SHOWS = ("all", *reversed(SHOWN))  # what recall shows: one arm, or lessons and rules together (all)
CHOICES = ("gated", *SHOWS)  # --memory-show: the arm the gate serves, or one always
