from anyio import run
from procio import run_process


async def main():
    result = await run_process(['ps'])
    print(result.stdout.decode())

run(main)
