from export_worker.main import main

main()
