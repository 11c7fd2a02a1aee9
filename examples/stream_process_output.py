from anyio import run
from procio import TextReceiveStream, open_process


async def main():
    async with await open_process(['ps']) as process:
        async for text in TextReceiveStream(process.stdout):
            print(text)

run(main)
