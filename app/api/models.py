from django.db import models


class Item(models.Model):
    """Seeded rows that /api/db reads: a fixed, realistic small query for the benchmarks."""

    name = models.CharField(max_length=100)
    price_cents = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name
