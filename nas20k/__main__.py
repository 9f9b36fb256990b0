from nas20k.cli import main

main()
