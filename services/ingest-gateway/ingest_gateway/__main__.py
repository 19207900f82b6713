from ingest_gateway.main import main

main()
