from consolidator.run import main

main()
