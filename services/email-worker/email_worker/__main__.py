from email_worker.main import main

main()
