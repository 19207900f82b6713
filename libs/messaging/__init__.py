"""RabbitMQ: the topology as data, a broker that confirms, and the consumer policy shared by every worker."""
