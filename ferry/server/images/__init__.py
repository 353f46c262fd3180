"""Images on the server: build recipes into layers (sandbox) or venvs (process runtime).

    builder          ImageService: builds off the event loop, progress, container specs
    sandbox_builder  base root filesystems, the Ferry runtime layer, one layer per step
    sandbox_steps    what each step runs in the build sandbox
    venv_builder     the process runtime's images: one venv per image
    oci              from_registry: OCI layouts and archives unpacked into a layer
    layers           the layer store under $FERRY_HOME/images
    files            manifests of uploaded files written out of the blob store
    rpc              image.build / image.list / image.rm / image.logs
"""
