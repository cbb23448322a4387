"""What each tab of the app (app.py) computes, with no UI code: none of these modules imports gradio.

    common   checkpoints (where the nets come from, which roles exist, random-weight zoos), input
             checks that name the field, errors, drawing and figure helpers, streamed sampling
    clevr    CLEVR objects: the objects table and scene (click to add / select / move, delete,
             a colour per object when the location net supports it), Fig 3 A/B/C side by side
             with live x0 previews, detector verdicts, contribution maps, examples
    colours  Fig 5: colour conditionals, histograms, the Lemma 8.1 verdict before sampling
    sdxl     whether an SDXL model can run here, prompts, a cached pipeline
    theory   §6.5's 2-D experts and App. G eqs. 17/18 (exact scores)

app.py turns these into one Gradio tab per function (`create_app(zoo)`).
"""
