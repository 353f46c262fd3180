import modal

app = modal.App("map-reduce")

@app.function()
def map_task(chunk: list):
    """Map: Process individual chunk"""
    return sum(x * x for x in chunk)

@app.function()
def reduce_task(results: list):
    """Reduce: Aggregate results"""
    return sum(results)

@app.local_entrypoint()
def main():
    # Split data into chunks
    data = list(range(1000000))
    chunk_size = 10000
    chunks = [data[i:i+chunk_size] for i in range(0, len(data), chunk_size)]

    # Map phase: process chunks in parallel
    map_results = list(map_task.map(chunks))

    # Reduce phase: aggregate results
    final_result = reduce_task.remote(map_results)

    print(f"Result: {final_result}")
