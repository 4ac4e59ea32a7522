"""Safety policy: text moderation for turns and captions, frame checks for videos."""
