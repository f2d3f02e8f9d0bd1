from avnbench.cli import main

main()
