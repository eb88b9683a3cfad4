"""One module per concern of an Airflow instance; ``instance.AirflowInstance`` wires them."""
