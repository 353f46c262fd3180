import modal

app = modal.App("guide-endpoints")

@app.function()
@modal.fastapi_endpoint(method="POST")
def square(x: int):
    """Accessible via POST request"""
    return {"square": x**2}

@app.function()
@modal.fastapi_endpoint(method="GET")
async def get_data(user_id: str):
    """Query params: ?user_id=123"""
    return {"user_id": user_id, "data": "..."}
