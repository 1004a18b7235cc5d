"""`fewsam annotate`: a page on this machine where SAM drafts each suggested slice from a box or
clicks, a person corrects it, and the slice is saved through the annotation folder's one writer.

`engines` turns prompts into masks (the base SAM, LiteMedSAM, or an adapter of a previous round),
`session` holds the folder, the scans and the embeddings, `server` is the HTTP API the page (and
any script) uses, `page/` the static page. Importing `annotate` loads no CLI.
"""
