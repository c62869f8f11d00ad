from flatbench.entry.cli import main

main()
