"""The medallion pipeline on Apache Spark, for volumes past one machine."""
