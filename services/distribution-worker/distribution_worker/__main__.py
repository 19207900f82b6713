from distribution_worker.main import main

main()
