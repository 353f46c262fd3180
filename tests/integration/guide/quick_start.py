import modal

app = modal.App("my-app")

@app.function()
def hello(name: str):
    return f"Hello {name}!"

# Run locally
@app.local_entrypoint()
def main():
    result = hello.remote("World")
    print(result)
