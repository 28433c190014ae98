from pusat.cli import main

main()
