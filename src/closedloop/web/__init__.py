"""The model in the browser: ``closedloop export-web`` builds a static folder whose page runs the
exported ONNX model client-side with onnxruntime-web (WebAssembly, one thread).

Modules: ``runtime.py`` (the pinned onnxruntime-web files, fetched once into a cache and checked),
``spec.py`` (the input contract both the page and Python read), ``build.py`` (the folder),
``reference.py`` (Python predictions from the same spec), ``cli.py`` (the command).
Nothing here is imported by ``import closedloop`` or by the server's request path.
"""
