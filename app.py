"""projcomp app (placeholder until the app issue lands): serves on 127.0.0.1:7860."""
import gradio as gr

with gr.Blocks(title="projcomp") as demo:
    gr.Markdown("# projcomp\nProjective composition of diffusion models — the full app is being built.")

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=2).launch(server_name="127.0.0.1", server_port=7860)
