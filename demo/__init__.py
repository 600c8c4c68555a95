"""The Gradio UI. It holds no model logic: every handler calls a facade from `core`."""
