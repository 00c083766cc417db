from mxgate.cli import main

main()
