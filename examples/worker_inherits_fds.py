import os
from functools import partial

from anyio import create_task_group, run, to_thread
from procio import to_process


def cpu_intensive_function(receiver, sender):
    data = os.read(receiver, 1024)
    os.write(sender, data + b", World!")

async def main():
    receiver0, sender0 = os.pipe()
    receiver1, sender1 = os.pipe()
    os.set_inheritable(receiver0, True)
    os.set_inheritable(sender1, True)
    async with create_task_group() as tg:
        tg.start_soon(partial(to_process.run_sync, cpu_intensive_function, receiver0, sender1, close_fds=False))
        os.write(sender0, b"Hello")
        data = await to_thread.run_sync(os.read, receiver1, 1024)
    print(data)  # b'Hello, World!'

# This check is important when the application uses to_process.run_sync()
if __name__ == '__main__':
    run(main)
