from spark_jobs.cli import main

main()
