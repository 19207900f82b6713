from dlq_service.main import main

main()
