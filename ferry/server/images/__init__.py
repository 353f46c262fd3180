"""Images on the server: build recipes into layers (sandbox) or venvs (process runtime).

    builder          ImageService: builds off the event loop, progress, container specs
    sandbox_builder  base root filesystems, the Ferry runtime layer, one layer per step
    sandbox_steps    what each step runs in the build sandbox
    venv_builder     the process runtime's images (one venv per image) and the ray runtime's
                     (checked here, built on each node: runtimes/ray/node_images.py)
    venv_recipe      planning and building a venv, with no server state (nodes use it too)
    commands         pip/uv commands, runtime packages, BuildFailed and its caller's error
    oci              from_registry: OCI layouts and archives unpacked into a layer
    layers           the layer store under $FERRY_HOME/images
    files            manifests of uploaded files written out of the blob store
    rpc              image.build / image.list / image.rm / image.logs
"""
