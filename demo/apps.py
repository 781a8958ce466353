from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "demo"
    verbose_name = "The seeded demo and the walkthrough (a client of the other apps)"
