"""vla-demo entry point: ``python app.py``.

The live Gradio app lands with issue 6; until then this renders a scripted episode of the
tabletop simulator to ``episode.mp4`` so a new user sees the sim, the task grammar and the expert
working end to end. All flags of ``python -m vla_demo sim`` are accepted.
"""

import sys

from vla_demo.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["sim", *sys.argv[1:]]))
