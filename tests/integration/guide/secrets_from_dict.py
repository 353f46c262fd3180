import modal

app = modal.App("guide-secrets")

secret = modal.Secret.from_dict({
    "API_KEY": "sk-...",
    "DB_PASSWORD": "secret123",
})

@app.function(secrets=[secret])
def my_function():
    import os
    api_key = os.environ["API_KEY"]
    return "Secrets loaded" if api_key == "sk-..." else "missing"

@app.local_entrypoint()
def main():
    print(my_function.remote())
