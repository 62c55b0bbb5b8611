import sys

from .cli import main

# Guarded: the vllm backend's engine process is spawned and re-imports the main module.
if __name__ == "__main__":
    sys.exit(main())
