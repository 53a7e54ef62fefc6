from django.db import models


class Message(models.Model):
    """A chat message. It is stored before it is broadcast: an acknowledged message is in here."""

    room = models.CharField(max_length=100)
    user = models.CharField(max_length=64)
    body = models.TextField()
    sent_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["room", "-id"], name="chat_room_recent")]

    def __str__(self) -> str:
        return f"{self.room}: {self.body[:40]}"

    def as_event(self) -> dict[str, object]:
        """The wire shape of a message (history entries and broadcasts alike)."""
        return {
            "type": "chat.message",
            "id": self.id,
            "room": self.room,
            "message": self.body,
            "user": self.user,
            "sent_at": self.sent_at.isoformat(),
        }
