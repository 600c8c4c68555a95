"""ExpressionLab: `python app.py` serves the UI on 127.0.0.1:7860.

GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override the address, as hosts such as Hugging Face
Spaces expect. Analytics are off, so starting the app sends nothing over the network.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from demo.app import LAUNCH_OPTIONS, build_demo  # noqa: E402  (the environment must be set before gradio is imported)


def main() -> None:
    demo = build_demo()  # queue limits included
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **LAUNCH_OPTIONS,
    )


if __name__ == "__main__":
    main()
