"""A stand-in for `selfcorrect improve` in the serve --improve tests: it writes the recipe and
report a finished one-round run would (round 1 accepted), after a pause, and counts its calls.
Usage: python tests/fake_improve.py OUT [--fail] [--sleep SECONDS]"""

import json
import sys
import time
from pathlib import Path

out = Path(sys.argv[1])
calls = out / "calls"
calls.write_text(str(int(calls.read_text()) + 1 if calls.exists() else 1))
time.sleep(float(sys.argv[sys.argv.index("--sleep") + 1]) if "--sleep" in sys.argv else 0.3)
if "--fail" in sys.argv:
    print("improve failed: no train item was verified", flush=True)
    sys.exit(1)
measured = {"strategy": "single", "accuracy": 0.6, "interval": [0.5, 0.7], "items": 100, "tokens_per_item": 10.0}
recipe = {"task": "served:store.sqlite", "round": 1, "checkpoint": {"name": "cycle/round-1", "round": 1, "path": str(out)},
          "strategy": "single", "sampling": {"temperature": 0.3}, "labels": "none", "oracle": False,
          "heldout": measured, "base_best": {**measured, "accuracy": 0.4}, "measured_at": time.time()}
(out / "recipe.json").write_text(json.dumps(recipe))
(out / "report.json").write_text(json.dumps({"stopped": "all 1 rounds done", "traffic": {"references": {"heldout": {"check": 9}}}}))
